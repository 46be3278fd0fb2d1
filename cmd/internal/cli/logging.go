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
	lvl, err := zapcore.ParseLevel(cmd.String("log-level"))
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	var zc zap.Config
	switch cmd.String("log-format") {
	case "json":
		zc = zap.NewProductionConfig()
	case "console":
		zc = zap.NewDevelopmentConfig()
	default:
		return nil, fmt.Errorf("--log-format %q: use json or console", cmd.String("log-format"))
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil // every event counts: a dropped bind failure is a lost diagnosis
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return zc.Build()
}
