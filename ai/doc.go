// Package ai runs riverhub's AI tasks: one chat completion tried against an
// ordered chain of provider/model targets until one attempt succeeds.
//
// The package owns:
//
//   - the wire formats of the supported providers ("openai" for any
//     OpenAI-compatible chat completions server, "anthropic" for the Messages
//     API, and "mock" for tests and throughput benchmarks);
//   - fallback: every failed attempt (transport error, timeout, non-2xx
//     status, unparsable response, refusal, output that does not match the
//     schema, unknown provider, mock error) moves on to the next target;
//   - structured output: the model's text becomes Result.Data, a compact JSON
//     value that, when a schema is given, has been validated against it;
//   - JSON Schema compilation, cached by content hash so that repeated runs
//     with the same schema do not recompile it;
//   - streaming (stream.go): with Request.OnDelta set, each provider streams
//     its answer in its own wire format (server-sent events) and OnDelta gets
//     the text as it comes; an attempt after a partial stream starts with a
//     reset. The Result is the same as without streaming.
//
// Guarantees:
//
//   - Result.Attempts lists every attempt in order, and Runner.OnAttempt is
//     called exactly once per entry, after the attempt finished.
//   - Attempt error strings are short, single-line and never contain the
//     configured API keys; they are meant to be shown to riverhub users.
//   - Each attempt is bounded by Config.Timeout, while cancelling the context
//     given to Run stops the whole chain at once.
//   - At most 4 MiB of any provider response is read.
//   - Schemas may not reference external documents: $ref is resolved only
//     inside the schema itself, so a schema can never make riverhub read
//     local files or fetch URLs.
//
// A Runner is safe for concurrent use.
package ai
