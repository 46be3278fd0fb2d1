package cli

import (
	"fmt"

	ucli "github.com/urfave/cli/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func logFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", Sources: ucli.EnvVars("SRIOV_CDI_LOG_LEVEL")},
		&ucli.StringFlag{Name: "log-format", Value: "json", Usage: "json or console", Sources: ucli.EnvVars("SRIOV_CDI_LOG_FORMAT")},
	}
}

// newLogger builds the process logger: one structured line per event.
func newLogger(cmd *ucli.Command) (*zap.Logger, error) {
	zc, err := loggerConfig(cmd.String("log-level"), cmd.String("log-format"))
	if err != nil {
		return nil, err
	}
	return zc.Build()
}

// loggerConfig is the process logger's configuration for --log-level and
// --log-format.
func loggerConfig(level, format string) (zap.Config, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return zap.Config{}, fmt.Errorf("--log-level: %w", err)
	}
	var zc zap.Config
	switch format {
	case "json":
		zc = zap.NewProductionConfig()
	case "console":
		// The development config's encoder (readable levels and caller),
		// without its development mode: no stack trace on warnings (a
		// PF link down, kubelet not there yet) and no panic on DPanic.
		// Errors carry the message and the error, which say enough.
		zc = zap.NewDevelopmentConfig()
		zc.Development = false
		zc.DisableStacktrace = true
	default:
		return zap.Config{}, fmt.Errorf("--log-format %q: use json or console", format)
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil // every event counts: a dropped bind failure is a lost diagnosis
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return zc, nil
}
