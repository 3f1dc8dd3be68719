// Package console owns a project's configuration in Redis: projects, API
// keys, workflows, structured outputs and webhook endpoints.
//
// API keys are stored only as SHA-256 hashes (the keys are 32 random bytes,
// so a fast hash is enough) and checked in constant time. Every read and
// write is scoped to one project: an id of another project is "not found".
//
// Keys (P = the configured prefix; {pid} is a hash tag so one project's
// collections share a Cluster slot):
//
//	P:apikey:<sha256 hex>           HASH  id, project_id, name, admin, hash
//	P:projects                      HASH  project id → Project JSON
//	P:projects:byname               HASH  name → project id
//	P:admin                         STRING hash of the current admin key
//	P:proj:{pid}:keys               HASH  key id → APIKey JSON
//	P:proj:{pid}:workflows          HASH  name → Workflow JSON
//	P:proj:{pid}:outputs            HASH  id → StructuredOutput JSON
//	P:proj:{pid}:webhooks           HASH  id → Webhook JSON
//
// Collections are small (tens to hundreds of entries per project), so a list
// reads the whole hash, sorts it and cuts a page; the cursor is the sort key
// of the last item returned.
package project
