package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoggerNoStackTraces: one event is one line; a warning (a PF link
// down, kubelet not there yet) carries no stack trace, in either format.
func TestLoggerNoStackTraces(t *testing.T) {
	for _, format := range []string{"console", "json"} {
		t.Run(format, func(t *testing.T) {
			zc, err := loggerConfig("debug", format)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "log")
			zc.OutputPaths, zc.ErrorOutputPaths = []string{out}, []string{out}
			log, err := zc.Build()
			if err != nil {
				t.Fatal(err)
			}
			log.Info("info event")
			log.Warn("warn event")
			if err := log.Sync(); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if len(lines) != 2 || strings.Contains(string(b), "tRunner") {
				t.Errorf("want 2 lines, no stack trace; got %d:\n%s", len(lines), b)
			}
		})
	}
}
