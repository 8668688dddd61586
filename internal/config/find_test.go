package config

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// userEnv is an environment whose user config directory is under dir,
// whatever the OS reads: %AppData%, $XDG_CONFIG_HOME or $HOME.
func userEnv(dir string, more map[string]string) map[string]string {
	env := map[string]string{"XDG_CONFIG_HOME": dir, "APPDATA": dir, "HOME": dir}
	for k, v := range more {
		env[k] = v
	}
	return env
}

func TestLoadUserConfigDirComesAfterLocalFile(t *testing.T) {
	user := t.TempDir()
	env := userEnv(user, nil)
	userFile := UserFile(envOf(env))
	if userFile == "" {
		t.Fatal("UserFile is empty with a user config directory set")
	}
	if err := os.MkdirAll(filepath.Dir(userFile), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Dir(userFile), "proxy.toml", `listen = "127.0.0.1:1004"`)
	withLocal := t.TempDir()
	local := writeFile(t, withLocal, "proxy.toml", `listen = "127.0.0.1:1001"`)
	envFile := writeFile(t, withLocal, "env.toml", `listen = "127.0.0.1:1002"`)
	empty := t.TempDir()

	tests := []struct {
		name       string
		dir        string
		env        map[string]string
		wantSource string
		wantListen string
	}{
		{"./proxy.toml before the user's", withLocal, env, local, "127.0.0.1:1001"},
		{"$CHUTES_PROXY_CONFIG before the user's", empty, userEnv(user, map[string]string{EnvConfig: envFile}), envFile, "127.0.0.1:1002"},
		{"the user's before the embedded", empty, env, userFile, "127.0.0.1:1004"},
		{"no user config dir: embedded", empty, nil, "", "127.0.0.1:8787"},
		{"user config dir without the file: embedded", empty, userEnv(t.TempDir(), nil), "", "127.0.0.1:8787"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(Options{Dir: tt.dir, Getenv: envOf(tt.env)})
			if err != nil {
				t.Fatalf("Load() error = %v", err)
			}
			if cfg.Source != tt.wantSource || cfg.Listen != tt.wantListen {
				t.Errorf("Source, listen = %q, %q; want %q, %q", cfg.Source, cfg.Listen, tt.wantSource, tt.wantListen)
			}
		})
	}
}

func TestUserFile(t *testing.T) {
	abs := t.TempDir()
	type userFileCase struct {
		name string
		env  map[string]string
		want string // "" means none
	}
	tests := []userFileCase{
		{"nothing set", nil, ""},
		{"relative directories are ignored", map[string]string{"XDG_CONFIG_HOME": "cfg", "APPDATA": "cfg", "HOME": "home"}, ""},
	}
	switch runtime.GOOS {
	case "windows":
		tests = append(tests, userFileCase{"%AppData%", map[string]string{"APPDATA": abs, "XDG_CONFIG_HOME": `C:\elsewhere`},
			filepath.Join(abs, "chutes-proxy", "proxy.toml")})
	case "darwin", "ios":
		tests = append(tests, userFileCase{"Application Support", map[string]string{"HOME": abs, "XDG_CONFIG_HOME": "/elsewhere"},
			filepath.Join(abs, "Library", "Application Support", "chutes-proxy", "proxy.toml")})
	default:
		tests = append(tests,
			userFileCase{"$XDG_CONFIG_HOME", map[string]string{"XDG_CONFIG_HOME": abs, "HOME": "/home/u"}, filepath.Join(abs, "chutes-proxy", "proxy.toml")},
			userFileCase{"~/.config, as in Termux", map[string]string{"HOME": "/data/data/com.termux/files/home"},
				"/data/data/com.termux/files/home/.config/chutes-proxy/proxy.toml"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := UserFile(envOf(tt.env)); got != tt.want {
				t.Errorf("UserFile() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLoadPathsWithSpacesAndBackslashes: --config paths as Windows users
// paste them, with spaces, in either slash, relative or absolute.
func TestLoadPathsWithSpacesAndBackslashes(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "My Documents", "chutes proxy")
	if err := os.MkdirAll(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, sub, "proxy (1).toml", `listen = "127.0.0.1:1005"`)

	type pathCase struct {
		name string
		opts Options
	}
	tests := []pathCase{
		{"absolute", Options{File: file}},
		{"relative to Dir", Options{File: filepath.Join("My Documents", "chutes proxy", "proxy (1).toml"), Dir: dir}},
		{"from the environment", Options{Getenv: envOf(map[string]string{EnvConfig: file})}},
	}
	if runtime.GOOS == "windows" { // t.TempDir() is C:\...\, so "absolute" has backslashes
		tests = append(tests,
			pathCase{"forward slashes", Options{File: filepath.ToSlash(file)}},
			pathCase{"relative with backslashes", Options{File: `My Documents\chutes proxy\proxy (1).toml`, Dir: dir}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Getenv == nil {
				tt.opts.Getenv = envOf(nil)
			}
			cfg, err := Load(tt.opts)
			if err != nil {
				t.Fatalf("Load(%q) error = %v", tt.opts.File, err)
			}
			if cfg.Listen != "127.0.0.1:1005" {
				t.Errorf("listen = %q, want the file's", cfg.Listen)
			}
			if filepath.Clean(cfg.Source) != filepath.Clean(file) {
				t.Errorf("Source = %q, want %q", cfg.Source, file)
			}
		})
	}
}
