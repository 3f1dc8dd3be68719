// Package archive keeps settled channels in PostgreSQL once their hot
// window has passed (RIVERHUB_ARCHIVE_URL): package channels moves them
// there out of Redis and reads them back for the channel API, timelines,
// late joins and the request logs (channels.Archive).
//
// One table, riverhub_channels, keyed by channel id: the fields the
// request logs filter and show, and the rest as the channel's compressed
// document. Writing a channel again replaces it, so a batch repeated after
// a crash changes nothing. Channels older than the archive's retention are
// deleted in batches by every node (each batch is one statement; nodes
// deleting at once skip each other's rows).
//
// The schema is created by plain SQL migrations (migrations/*.sql), applied
// in order at start under an advisory lock and recorded in
// riverhub_migrations. The tables live in the connection's search_path
// (a URL may name a schema: ?search_path=riverhub).
package archive

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/channels"
	"github.com/riverhub/riverhub/internal/apperr"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options configure a Store.
type Options struct {
	// Retention is how long an archived channel is kept (from its
	// creation); default 30 days.
	Retention time.Duration
	Log       zerolog.Logger
	Now       func() time.Time // default time.Now
}

// Store is the archive in PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
	o    Options

	migrating chan struct{} // one migration at a time (a semaphore that a context can leave)
	migrated  atomic.Bool
	// downUntil (unix ns): after the database did not answer, readers are
	// told so at once for a moment, rather than each waiting out a
	// connection attempt.
	downUntil atomic.Int64

	mu      sync.Mutex // guards stop, stopped
	stop    chan struct{}
	stopped chan struct{}
}

// Open connects to url (lazily: a database down now is tried again on
// each use) and applies the migrations if it can.
func Open(ctx context.Context, url string, o Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil { // not echoed: the URL may hold a password
		return nil, errors.New("RIVERHUB_ARCHIVE_URL: not a PostgreSQL URL pgx can read (postgres://user:password@host:port/database?option=value)")
	}
	cfg.MaxConns = max(cfg.MaxConns, 4)
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, errors.New("RIVERHUB_ARCHIVE_URL: cannot make a connection pool of it")
	}
	if o.Retention <= 0 {
		o.Retention = 30 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Store{pool: pool, o: o, migrating: make(chan struct{}, 1)}
	if err := s.migrate(ctx); err != nil {
		s.o.Log.Warn().Err(err).Msg("archive: database not ready; settled channels wait in Redis until it is")
	}
	return s, nil
}

// Close stops the retention loop and closes the connections.
func (s *Store) Close() {
	s.mu.Lock()
	stop, stopped := s.stop, s.stopped
	s.stop = nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-stopped
	}
	s.pool.Close()
}

// migrate applies the migrations not yet applied, once per Store.
func (s *Store) migrate(ctx context.Context) error {
	if s.migrated.Load() {
		return nil
	}
	select {
	case s.migrating <- struct{}{}:
		defer func() { <-s.migrating }()
	case <-ctx.Done():
		return wrap("migrate", ctx.Err())
	}
	if s.migrated.Load() {
		return nil
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	slices.Sort(names)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// One node migrates at a time (per schema); the others wait, then
		// find the work done.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.riverhub_migrations'))`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS riverhub_migrations (
			version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var done int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM riverhub_migrations`).Scan(&done); err != nil {
			return err
		}
		for _, name := range names {
			v, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, "migrations/"), "_", 2)[0])
			if err != nil {
				return fmt.Errorf("migration %s: no version number", name)
			}
			if v <= done {
				continue
			}
			sql, err := migrations.ReadFile(name)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return fmt.Errorf("migration %s: %w", name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO riverhub_migrations (version) VALUES ($1)`, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.answered("migrate", err)
	}
	s.migrated.Store(true)
	return s.answered("migrate", nil)
}

// Put stores channels, replacing those stored under the same ids, in one
// statement.
func (s *Store) Put(ctx context.Context, cs []channels.Archived) error {
	if err := s.migrate(ctx); err != nil {
		return err
	}
	n := len(cs)
	ids, pids, wfs, evs, sts := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	cms, cas, uas, docs, ens := make([]int64, n), make([]string, n), make([]string, n), make([][]byte, n), make([]int32, n)
	for i, c := range cs {
		ids[i], pids[i], wfs[i], evs[i], sts[i] = c.ChannelID, c.ProjectID, c.Workflow, c.EventName, string(c.Status)
		cms[i], cas[i], uas[i], docs[i], ens[i] = c.CreatedMS, c.CreatedAt, c.UpdatedAt, c.Doc, int32(c.Entries)
	}
	// A copy read earlier (by a node slower than another) has no more
	// entries than the one stored: it does not replace it.
	_, err := s.pool.Exec(ctx, `INSERT INTO riverhub_channels
		(channel_id, project_id, workflow, event_name, status, created_ms, created_at, updated_at, doc, entries)
		SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[],
			$9::bytea[], $10::int[])
		ON CONFLICT (channel_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at,
			doc = excluded.doc, entries = excluded.entries, archived_at = now()
		WHERE riverhub_channels.entries <= excluded.entries`,
		ids, pids, wfs, evs, sts, cms, cas, uas, docs, ens)
	return s.answered(fmt.Sprintf("store %d channels", n), err)
}

// Get returns the archived channel cid, or nil.
func (s *Store) Get(ctx context.Context, cid string) (*channels.Archived, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	a := channels.Archived{ChannelID: cid}
	var st string
	var entries int32
	err := s.pool.QueryRow(ctx, `SELECT project_id, workflow, event_name, status, created_ms, created_at, updated_at, doc, entries
		FROM riverhub_channels WHERE channel_id = $1`, cid).
		Scan(&a.ProjectID, &a.Workflow, &a.EventName, &st, &a.CreatedMS, &a.CreatedAt, &a.UpdatedAt, &a.Doc, &entries)
	a.Entries = int(entries)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, s.answered("get channel", nil)
	}
	if err != nil {
		return nil, s.answered("get channel", err)
	}
	a.Status = channels.Status(st)
	return &a, s.answered("get channel", nil)
}

// Logs lists the project's archived channels that match f, newest first,
// strictly after the position after (when not nil), at most limit.
func (s *Store) Logs(ctx context.Context, pid string, f channels.LogFilter, after *channels.LogPos, limit int) ([]channels.ArchivedLog, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	q := strings.Builder{}
	// (The id is selected as text under another name: ordering by the
	// column, not the text, follows the index.)
	q.WriteString(`SELECT channel_id::text AS id, workflow, event_name, status, created_at, updated_at, created_ms
		FROM riverhub_channels WHERE project_id = $1`)
	args := []any{pid}
	cond := func(sql string, v ...any) {
		for _, x := range v {
			args = append(args, x)
			sql = strings.Replace(sql, "?", "$"+strconv.Itoa(len(args)), 1)
		}
		q.WriteString(" AND " + sql)
	}
	if f.Workflow != "" {
		cond("workflow = ?", f.Workflow)
	}
	if f.EventName != "" {
		cond("event_name = ?", f.EventName)
	}
	if f.Status != "" {
		cond("status = ?", string(f.Status))
	}
	if !f.From.IsZero() {
		cond("created_ms >= ?", f.From.UnixMilli())
	}
	if !f.To.IsZero() {
		cond("created_ms <= ?", f.To.UnixMilli())
	}
	if after != nil {
		cond("(created_ms, channel_id) < (?, ?::uuid)", after.CreatedMS, after.ChannelID)
	}
	args = append(args, limit)
	q.WriteString(" ORDER BY riverhub_channels.created_ms DESC, riverhub_channels.channel_id DESC LIMIT $" + strconv.Itoa(len(args)))
	rows, err := s.pool.Query(ctx, q.String(), args...)
	if err != nil {
		return nil, s.answered("logs", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (channels.ArchivedLog, error) {
		var it channels.ArchivedLog
		var ev, st string
		err := r.Scan(&it.ChannelID, &it.Workflow, &ev, &st, &it.CreatedAt, &it.UpdatedAt, &it.CreatedMS)
		it.Status = channels.Status(st)
		if ev != "" {
			it.EventName = &ev
		}
		return it, err
	})
	if err != nil {
		return nil, s.answered("logs", err)
	}
	return out, s.answered("logs", nil)
}

// deleteBatch is how many expired channels one statement deletes.
const deleteBatch = 5000

// Expire deletes the channels created longer than the retention ago, a
// batch at a time, and returns how many.
func (s *Store) Expire(ctx context.Context) (int64, error) {
	if err := s.migrate(ctx); err != nil {
		return 0, err
	}
	cutoff := s.o.Now().Add(-s.o.Retention).UnixMilli()
	// The ids (UUIDv7) of channels created before the cutoff are below the
	// least id of its millisecond: the primary key's range.
	var floor [16]byte
	for i := range 6 {
		floor[i] = byte(uint64(cutoff) >> (40 - 8*i))
	}
	var total int64
	for ctx.Err() == nil {
		tag, err := s.pool.Exec(ctx, `DELETE FROM riverhub_channels WHERE channel_id IN (
			SELECT channel_id FROM riverhub_channels WHERE channel_id < $1 AND created_ms < $2 LIMIT $3 FOR UPDATE SKIP LOCKED)`,
			floor, cutoff, deleteBatch)
		if err != nil {
			return total, s.answered("expire", err)
		}
		_ = s.answered("expire", nil)
		total += tag.RowsAffected()
		if tag.RowsAffected() < deleteBatch {
			break
		}
	}
	return total, ctx.Err()
}

// Start runs Expire every so often (a hundredth of the retention, at
// least a minute, at most an hour) until Close.
func (s *Store) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		return
	}
	s.stop, s.stopped = make(chan struct{}), make(chan struct{})
	stop, stopped := s.stop, s.stopped
	every := min(max(s.o.Retention/100, time.Minute), time.Hour)
	go func() {
		defer close(stopped)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { <-stop; cancel() }()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if n, err := s.Expire(ctx); err != nil && ctx.Err() == nil {
				s.o.Log.Warn().Err(err).Msg("archive: delete expired channels; retried")
			} else if n > 0 {
				s.o.Log.Info().Int64("channels", n).Msg("archive: deleted expired channels")
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
}

// downFor is how long readers are answered ErrUnavailable at once after
// the database did not answer.
const downFor = time.Second

// ready is migrate for a reader: while the database is known to be down,
// ErrUnavailable at once.
func (s *Store) ready(ctx context.Context) error {
	if time.Now().UnixNano() < s.downUntil.Load() {
		return fmt.Errorf("archive: %w (it did not answer a moment ago)", ErrUnavailable)
	}
	return s.migrate(ctx)
}

// answered notes the outcome of a statement and returns err wrapped (nil
// for nil): the database known down for a moment when it did not answer,
// and known up again as soon as it answered anything (so that readers are
// served as soon as the archive moves again, not a moment later).
func (s *Store) answered(what string, err error) error {
	if err == nil {
		s.downUntil.Store(0)
		return nil
	}
	var pe *pgconn.PgError
	conflict := errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01") // an answer, worth retrying
	err = wrap(what, err)
	switch {
	case !errors.Is(err, ErrUnavailable) || conflict:
		s.downUntil.Store(0)
	case !errors.Is(err, context.Canceled):
		s.downUntil.Store(time.Now().Add(downFor).UnixNano())
	}
	return err
}

// ErrUnavailable answers a request the archive could not serve now (the
// database down, unreachable or too slow): a retryable 503, like Redis's.
var ErrUnavailable = &apperr.Error{Kind: apperr.Unavailable, Code: "unavailable",
	Message: "the service is briefly unavailable (its archive database did not answer); retry after Retry-After seconds", RetryAfter: 1}

// wrap names what failed; a database that did not answer is ErrUnavailable
// (the cause kept in the message for the log).
func wrap(what string, err error) error {
	if unavailable(err) {
		return fmt.Errorf("archive: %s: %w (%w)", what, ErrUnavailable, err)
	}
	return fmt.Errorf("archive: %s: %w", what, err)
}

// unavailable reports whether err means the database could not serve now
// (down, unreachable, restarting, failing over, out of connections, or a
// conflict worth retrying), rather than that the query is wrong.
func unavailable(err error) bool {
	var ne net.Error
	var ce *pgconn.ConnectError
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.As(err, &ne) ||
		errors.As(err, &ce) || pgconn.Timeout(err) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exceptions
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", // shutting down, starting up
			pe.Code == "53300",                     // too many connections
			pe.Code == "40001", pe.Code == "40P01": // serialization failure, deadlock
			return true
		}
	}
	return false
}
