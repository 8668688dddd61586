//go:build race

package chaos

// raceEnabled: the race detector makes every request several times
// dearer, so the storm is smaller under it to keep CI bounded.
const raceEnabled = true
