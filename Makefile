.PHONY: test ci run demo bench
test:
	go test -race ./...
ci:
	bash .ci/run
run:
	go run ./cmd/chutes-proxy
demo:
	go run ./cmd/chutes-proxy demo
bench:
	go test -run '^$$' -bench . -benchmem ./...
