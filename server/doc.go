// Package server is riverhub's HTTP surface: the gin router, the console
// API, task submission (with Idempotency-Key), backends' callbacks, channel
// reads, the request logs and dead letters, the socket endpoint's mount,
// health and metrics. It authenticates, limits and decodes requests, calls
// the packages that own the data, and maps their application errors to one
// JSON envelope: {"error": "<code>", "message": "<human text>"}. It knows
// no Redis keys.
package server
