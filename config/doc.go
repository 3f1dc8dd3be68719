// Package config reads riverhub's settings from the environment and from
// command-line flags, fills in defaults and refuses settings the server
// cannot run with.
//
// Environment variables are the primary source because the server is meant
// to run in containers; every setting that is not a secret also has a flag
// (lower-kebab case, without the RIVERHUB_ prefix, e.g. -max-queue) for
// local runs, and a flag wins over the variable. Secrets (admin key, token
// secret, provider API keys) have no flag on purpose: command lines are
// visible to every user of the machine through the process list.
//
// An empty variable counts as unset. Values are trimmed of surrounding
// white space, since stray newlines from secret files and shell quoting are
// a common source of "wrong key" puzzles.
//
// Load parses, then calls Config.Validate, which is the single place that
// knows the rules (ranges, URL shapes, what production requires), so a
// Config edited by a test can be checked the same way. Errors are one line
// that names the variable (or the flag) and the problem, and never echo a
// secret.
//
// Production mode ("RIVERHUB_ENV=production") is stricter than development:
// it needs a real Redis (REDIS_URL), a token secret of at least 32 bytes and,
// when RIVERHUB_PUBLIC_URL is set, an https URL.
package config
