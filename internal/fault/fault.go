// Package fault crashes the process at named points, so that the torture
// tests can kill the real binary exactly between two steps of the commit
// protocol.
//
// The injector is a test hook and stays out of release builds: it is
// compiled in only with the build tag faultinject (go build -tags
// faultinject, as the torture suite does). Without the tag, Parse ignores
// IDEMSINK_FAULT and Hit does nothing, whatever the environment says.
package fault

// Env is the variable that enables fault points, as a comma-separated list
// of point=probability, e.g. "after-upsert=0.05,after-pg-commit=0.05".
const Env = "IDEMSINK_FAULT"

// Points are the fault points the daemon has.
var Points = []string{"after-stage", "after-upsert", "after-pg-commit", "during-rebalance", "between-lanes"}
