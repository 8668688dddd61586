package diagnose

import (
	"net/url"
	"strings"
)

// Local model servers a [[providers]] table may point at, for
// Server.Kind.
const (
	Ollama    = "Ollama"
	LlamaCpp  = "llama.cpp"
	KoboldCpp = "KoboldCpp"
	LMStudio  = "LM Studio"
)

// Server is a provider's base_url as a local model server: which one it
// looks like, so that a refused connection can say what to start.
type Server struct {
	// Kind is one of the constants above, "" when neither the provider's
	// name nor the port tells.
	Kind string
	Port string
}

// LocalServer guesses the server behind a provider's base_url from the
// provider's name ("ollama", "llamacpp" ...) or else the server's default
// port (Ollama 11434, llama-server 8080, KoboldCpp 5001, LM Studio 1234).
func LocalServer(name, base string) Server {
	var s Server
	if u, err := url.Parse(base); err == nil {
		s.Port = u.Port()
	}
	n := strings.ToLower(name)
	switch {
	case strings.Contains(n, "ollama"):
		s.Kind = Ollama
	case strings.Contains(n, "kobold"):
		s.Kind = KoboldCpp
	case strings.Contains(n, "lmstudio"), strings.Contains(n, "lm-studio"):
		s.Kind = LMStudio
	case strings.Contains(n, "llama-cpp"), strings.Contains(n, "llamacpp"), strings.Contains(n, "llama-server"):
		s.Kind = LlamaCpp
	default:
		s.Kind = map[string]string{"11434": Ollama, "8080": LlamaCpp, "5001": KoboldCpp, "1234": LMStudio}[s.Port]
	}
	return s
}

// Start says how to start the server, e.g. "start Ollama: `ollama
// serve`"; every usual server's way when its kind is unknown.
func (s Server) Start() string {
	port := s.Port
	if port == "" {
		port = "PORT"
	}
	switch s.Kind {
	case Ollama:
		return "start Ollama: `ollama serve` (or open the Ollama app)"
	case LlamaCpp:
		return "start llama.cpp's server: `llama-server -m MODEL.gguf --port " + port + "`"
	case KoboldCpp:
		return "start KoboldCpp with its API server on port " + port + " (`koboldcpp --model MODEL.gguf --port " + port + "`)"
	case LMStudio:
		return "start LM Studio's API server (Developer tab, Start Server, or `lms server start`)"
	}
	return "start the local model server (Ollama: `ollama serve`; llama.cpp: `llama-server --port " + port +
		"`; KoboldCpp or LM Studio: start its API server)"
}
