package batch

import "github.com/idemsink/idemsink/internal/config/configtest"

// The configuration helpers are configtest's, under the short names the
// tests use.
var (
	pipeline = configtest.Pipeline
	col      = configtest.Col
	nullable = configtest.Nullable
)
