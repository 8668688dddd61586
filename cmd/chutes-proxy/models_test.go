package main

// Models of the end-to-end scenario, shared by the tests of every
// platform (e2e_test.go is unix-only).
const (
	mDown      = "deepseek-ai/DeepSeek-R1"                      // 503
	mHealthy   = "chutesai/Mistral-Small-3.1-24B-Instruct-2503" // the dead one's fallback
	mReasoning = "deepseek-ai/DeepSeek-V3"
	mDrop      = "Qwen/Qwen3-14B" // stream cut after 5 events
	mPay       = "Qwen/Qwen3-32B" // 402
	mAlpha     = "test/alpha"
	mBeta      = "test/beta"
	mSlow      = "test/slow" // a ~1 s stream

	e2eKey        = "cpk_e2e_test_key"
	healthyReply  = "Bonjour! How can I help you today?"
	reasoningText = "The user says hello. A short, friendly answer will do."
	reasoningRply = "Hello! What can I do for you?"
	slowReply     = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"
)
