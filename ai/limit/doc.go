// Package limit keeps riverhub's calls to a provider within the account
// limits of the credential they use (an API key at a base URL): requests
// in flight, requests per minute and tokens per minute, shared by every
// node through Redis.
//
// The package owns the keys <prefix>:plim:{<credential>}:conc, :rpm and
// :tpm (one hash tag per credential, so one Cluster slot) and the two
// scripts that change them: acquire checks all three limits and records an
// admission, or records nothing; release gives a concurrency slot back and
// adds the tokens an answer reported. Every key expires once its
// credential has been idle for the RPM window plus Hold.
//
// Concurrency contract: a Limiter is safe for concurrent use. Before each
// HTTP request to a provider the caller Acquires a Permit for the
// credential and Releases it, with the tokens the answer reported, after
// the request, whatever its outcome. Release does not wait: a node writes
// the releases that come while it writes one batch in the next, one
// pipeline (Flush waits for them, before a node exits). Waiters of one
// credential queue on their node in arrival order; only the first of them
// calls Redis (once per Poll while the concurrency limit is full, once
// when an RPM or TPM window moves on), and a release written by the same
// node wakes it at once.
// Acquire ends when ctx does, having taken nothing; while Redis fails it
// retries with backoff rather than admit a request without a permit. A
// credential without limits costs a map lookup: no Redis, no allocation.
//
// Guarantees, as long as the nodes' clocks agree (Options.Now is each
// node's clock corrected to Redis time, rdb.Clock.Now):
//
//   - never more than Concurrency permits held at once across nodes; the
//     permit of a node that died holding it counts until Hold has passed;
//   - never more than RPM admissions in any window of one minute plus
//     Options.Margin across nodes (an exact sliding log, not a fixed
//     window), so that the provider, which sees each request a little
//     after its admission, never counts more than RPM in its own minute;
//   - TPM is approximate by design: tokens are known only once an answer
//     arrives, so the requests admitted before the sum reached TPM may take
//     it beyond; admission then stops until enough of the last minute's
//     tokens (counted in one-second buckets) have left it.
//
// A permit whose Release fails (Redis down) is not lost: it expires after
// Hold, which the caller sets above the provider timeout.
package limit
