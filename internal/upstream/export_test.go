package upstream

// ChecksAlive tells the tests whether pooled connections are checked
// before reuse on this platform.
const ChecksAlive = checksAlive
