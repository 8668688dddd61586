package payload

import (
	"bytes"
	"io"
	"strconv"
	"testing"
)

// benchBody is a chat request of about size bytes shaped like SillyTavern's:
// a long history whose contents carry escapes and non-ASCII text, then the
// sampler fields, with "model" near the end (as SillyTavern and the OpenAI
// SDKs send it), so that finding it means walking the whole body.
func benchBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"messages":[{"role":"system","content":"You are Seraphina, a guardian of the forest.\nStay in character; never speak for {{user}}."}`)
	turn := `,{"role":"user","content":"*She looks up from the map.* \"Where does the river go?\" \u2014 naïve question… ` +
		`I\u2019ll follow you anyway.\n\nWrite 2 paragraphs, no more."},{"role":"assistant","content":"*Seraphina smiles softly.* \"East, past the old mill.\"\n` +
		`The river bends there, and the water runs fast — we cross at dawn. {\"mood\": \"calm\"} [OOC: ok]"}`
	for i := 0; b.Len() < size-300; i++ {
		b.WriteString(turn)
	}
	b.WriteString(`],"temperature":0.9,"top_p":0.95,"top_k":40,"min_p":0.05,"repetition_penalty":1.1,"max_tokens":400,` +
		`"stop":["\n{{user}}:","</s>"],"logit_bias":{},"stream":true,"model":"deepseek-ai/DeepSeek-R1","seed":-1}`)
	return b.Bytes()
}

var benchSizes = []struct {
	name string
	size int
}{{"1KB", 1 << 10}, {"100KB", 100 << 10}, {"1MB", 1 << 20}}

// BenchmarkParseSizes finds "model" and "stream" in a body: one validating pass,
// no decoding; the only allocation is the model string.
func BenchmarkParseSizes(b *testing.B) {
	for _, sz := range benchSizes {
		raw := benchBody(sz.size)
		if _, err := Parse(raw); err != nil {
			b.Fatalf("%s: %v", sz.name, err)
		}
		b.Run(sz.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				body, err := Parse(raw)
				if err != nil || body.Model == "" {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReaderSizes replays a body for the upstream through Body.Reader and
// io.Copy, with the client's model ("same") and with a fallback's ("rewrite"):
// neither copies the body.
func BenchmarkReaderSizes(b *testing.B) {
	for _, sz := range benchSizes {
		body, err := Parse(benchBody(sz.size))
		if err != nil {
			b.Fatal(err)
		}
		for _, mode := range []struct{ name, model string }{
			{"same", body.Model},
			{"rewrite", "chutesai/Mistral-Small-3.1-24B-Instruct-2503"},
		} {
			b.Run(sz.name+"/"+mode.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(body.Raw)))
				for b.Loop() {
					rd, n := body.Reader(mode.model)
					if m, err := io.Copy(io.Discard, rd); err != nil || m != n {
						b.Fatalf("copied %d of %d: %v", m, n, err)
					}
				}
			})
		}
	}
}

// BenchmarkWithSizes builds the rewritten body as one slice: one copy, for
// comparison with Reader.
func BenchmarkWithSizes(b *testing.B) {
	for _, sz := range benchSizes {
		body, err := Parse(benchBody(sz.size))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(sz.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body.Raw)))
			for b.Loop() {
				if out := body.With("chutesai/Mistral-Small-3.1-24B-Instruct-2503"); len(out) == 0 {
					b.Fatal("empty")
				}
			}
		})
	}
}

// TestBenchBody keeps the benchmark bodies valid and near their sizes.
func TestBenchBody(t *testing.T) {
	for _, sz := range benchSizes {
		raw := benchBody(sz.size)
		body, err := Parse(raw)
		if err != nil || body.Model != "deepseek-ai/DeepSeek-R1" || !body.Stream {
			t.Fatalf("%s: %v %+v", sz.name, err, body)
		}
		if len(raw) < sz.size*9/10 || len(raw) > sz.size*11/10 {
			t.Errorf("%s body is %s bytes", sz.name, strconv.Itoa(len(raw)))
		}
	}
}
