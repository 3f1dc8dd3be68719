// Package rdb opens the Redis connection every other package shares.
//
// A REDIS_URL names a single server (redis://, rediss://), a Sentinel group
// (redis-sentinel://) or a Cluster (redis-cluster://); all come back as a
// redis.UniversalClient, so the code above never cares which. Without a
// URL, development mode gets an embedded in-memory Redis so that `go run .`
// works on a bare machine; nothing it holds survives a restart.
//
// Clock is the deployment's time: each node's clock corrected by its
// measured offset from Redis TIME, so the times one node stores (leases,
// due times, deadlines) mean the same on every other node.
package rdb
