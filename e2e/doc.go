// Package e2e holds the multi-region end-to-end tests: real Redis, NATS and
// child containers built locally without any image registry (package
// e2e/images), started, partitioned, killed and restarted by package
// e2e/harness. The package has no code of its own besides the tests; see
// README.md for how to run them.
package e2e
