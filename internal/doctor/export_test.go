package doctor

// Exported for doctor_test.
var (
	FetchQuota   = fetchQuota
	FetchBalance = fetchBalance
)
