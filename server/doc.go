// Package server is riverhub's HTTP surface: the gin router, the console
// API, task submission, channel reads, health and metrics. It
// authenticates, limits and decodes requests, calls the packages that own
// the data, and maps their application errors to one JSON envelope:
// {"error": "<code>", "message": "<human text>"}. It knows no Redis keys.
package server
