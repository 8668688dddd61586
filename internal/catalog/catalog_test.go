package catalog_test

import (
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
)

// TestProviderLists: another provider's list answers Lookup for its
// NAME:MODEL ids (the context window the router needs) and ProviderListed,
// and leaves what IDs and Listed say of Chutes' list alone.
func TestProviderLists(t *testing.T) {
	c := catalog.New()
	c.Set([]catalog.Entry{{ID: "deepseek-ai/DeepSeek-R1", ContextLength: 163840}}, time.Now())
	c.SetProvider("openrouter", []catalog.Entry{{ID: "deepseek/deepseek-r1:free", ContextLength: 65536}, {ID: "meta/llama"}})
	c.SetProvider("local", []catalog.Entry{{ID: "llama3.1:8b"}})

	tests := []struct {
		id      string
		found   bool
		context int
	}{
		{"deepseek-ai/DeepSeek-R1", true, 163840},
		{"chutes:deepseek-ai/DeepSeek-R1", true, 163840},
		{"openrouter:deepseek/deepseek-r1:free", true, 65536},
		{"openrouter:meta/llama", true, 0},
		{"local:llama3.1:8b", true, 0},
		{"deepseek/deepseek-r1:free", false, 0}, // not Chutes'
		{"openrouter:deepseek-ai/DeepSeek-R1", false, 0},
		{"other:llama3.1:8b", false, 0},
		{"org/model:tag", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			e, ok := c.Lookup(tt.id)
			if ok != tt.found || e.ContextLength != tt.context {
				t.Errorf("Lookup = %+v, %v; want found %v, context %d", e, ok, tt.found, tt.context)
			}
		})
	}

	if ids := c.IDs(); len(ids) != 1 || ids[0] != "deepseek-ai/DeepSeek-R1" {
		t.Errorf("IDs = %v, want Chutes' only", ids)
	}
	if listed, known := c.Listed("openrouter:deepseek/deepseek-r1:free"); listed || !known {
		t.Errorf("Listed of a provider's model = %v, %v: Listed is Chutes' list", listed, known)
	}
	if listed, known := c.ProviderListed("openrouter", "deepseek/deepseek-r1:free"); !listed || !known {
		t.Errorf("ProviderListed = %v, %v", listed, known)
	}
	if listed, known := c.ProviderListed("local", "qwen2.5:7b"); listed || !known {
		t.Errorf("ProviderListed of a model not pulled = %v, %v", listed, known)
	}
	if _, known := c.ProviderListed("kobold", "x"); known {
		t.Error("a provider never listed is known")
	}

	c.SetProvider("openrouter", nil)
	if _, ok := c.Lookup("openrouter:deepseek/deepseek-r1:free"); ok {
		t.Error("a forgotten provider's model is still found")
	}
	if _, known := c.ProviderListed("openrouter", "meta/llama"); known {
		t.Error("a forgotten provider's list is still known")
	}
}
