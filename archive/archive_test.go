package archive

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/riverhub/riverhub/channels"
	"github.com/riverhub/riverhub/internal/pgtest"
)

func open(t *testing.T, u string, o Options) *Store {
	t.Helper()
	o.Log = zerolog.Nop()
	s, err := Open(context.Background(), u, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// channel is an archived channel created at ms, in workflow wf.
func channel(pid, wf, ev string, st channels.Status, ms int64) channels.Archived {
	id := uuid.Must(uuid.NewV7())
	// The id's time is the channel's (as the server's ids are).
	b := id
	for i := range 6 {
		b[i] = byte(uint64(ms) >> (40 - 8*i))
	}
	stamp := time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
	return channels.Archived{ChannelID: b.String(), ProjectID: pid, Workflow: wf, EventName: ev, Status: st,
		CreatedAt: stamp, UpdatedAt: stamp, CreatedMS: ms, Doc: []byte{1, 2, 3}}
}

func TestPutGetReplace(t *testing.T) {
	t.Parallel()
	s := open(t, pgtest.URL(t), Options{})
	ctx := context.Background()
	c := channel("p1", "wf", "", channels.StatusSuccess, 1_700_000_000_000)
	if err := s.Put(ctx, []channels.Archived{c}); err != nil {
		t.Fatal(err)
	}
	// The same channel again (a batch repeated after a crash) replaces it,
	// with as many entries or more; a copy with fewer (read earlier by a
	// slower node) does not.
	c.Doc, c.Entries = []byte("second"), 3
	if err := s.Put(ctx, []channels.Archived{c, channel("p1", "wf", "", channels.StatusError, 1_700_000_000_001)}); err != nil {
		t.Fatal(err)
	}
	older := c
	older.Doc, older.Entries = []byte("older"), 2
	if err := s.Put(ctx, []channels.Archived{older}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, c.ChannelID)
	if err != nil || got == nil {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if fmt.Sprint(*got) != fmt.Sprint(c) {
		t.Errorf("Get = %+v, want %+v", *got, c)
	}
	if got, err := s.Get(ctx, uuid.NewString()); got != nil || err != nil {
		t.Errorf("Get(unknown) = %v, %v; want nil, nil", got, err)
	}
	// A second Store (another node) finds the schema migrated.
	s2 := open(t, s.pool.Config().ConnString(), Options{})
	if got, err := s2.Get(ctx, c.ChannelID); err != nil || got == nil {
		t.Errorf("Get on a second store = %v, %v", got, err)
	}
}

func TestLogsPagesAndFilters(t *testing.T) {
	t.Parallel()
	s := open(t, pgtest.URL(t), Options{})
	ctx := context.Background()
	var all []channels.Archived
	base := int64(1_700_000_000_000)
	for i := range 30 {
		wf, ev, st := "a", "", channels.StatusSuccess
		if i%3 == 1 {
			wf, st = "b", channels.StatusError
		}
		if i%3 == 2 {
			wf, ev, st = "c", "thing", channels.StatusCompleted
		}
		all = append(all, channel("p1", wf, ev, st, base+int64(i/2))) // two a millisecond
	}
	all = append(all, channel("p2", "a", "", channels.StatusSuccess, base))
	if err := s.Put(ctx, all); err != nil {
		t.Fatal(err)
	}
	walk := func(f channels.LogFilter, limit int) []string {
		var out []string
		var after *channels.LogPos
		for range 100 {
			items, err := s.Logs(ctx, "p1", f, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range items {
				out = append(out, it.ChannelID)
			}
			if len(items) < limit {
				return out
			}
			last := items[len(items)-1]
			after = &channels.LogPos{CreatedMS: last.CreatedMS, ChannelID: last.ChannelID}
		}
		t.Fatal("no end")
		return nil
	}
	want := func(keep func(c channels.Archived) bool) []string {
		var out []string
		for i := len(all) - 2; i >= 0; i-- { // newest first; p2's is not p1's
			if keep(all[i]) {
				out = append(out, all[i].ChannelID)
			}
		}
		// Two a millisecond: the greater id first.
		for i := 0; i+1 < len(out); i++ {
			if ms(t, out[i]) == ms(t, out[i+1]) && out[i] < out[i+1] {
				out[i], out[i+1] = out[i+1], out[i]
			}
		}
		return out
	}
	check := func(name string, f channels.LogFilter, keep func(c channels.Archived) bool) {
		t.Helper()
		for _, limit := range []int{1, 4, 50} {
			if got, w := walk(f, limit), want(keep); fmt.Sprint(got) != fmt.Sprint(w) {
				t.Errorf("%s, limit %d:\n got %v\nwant %v", name, limit, got, w)
			}
		}
	}
	check("all", channels.LogFilter{}, func(channels.Archived) bool { return true })
	check("workflow", channels.LogFilter{Workflow: "b"}, func(c channels.Archived) bool { return c.Workflow == "b" })
	check("event", channels.LogFilter{EventName: "thing"}, func(c channels.Archived) bool { return c.EventName == "thing" })
	check("status", channels.LogFilter{Status: channels.StatusSuccess}, func(c channels.Archived) bool { return c.Status == channels.StatusSuccess })
	check("workflow and status", channels.LogFilter{Workflow: "b", Status: channels.StatusSuccess}, func(c channels.Archived) bool { return false })
	from, to := time.UnixMilli(base+3), time.UnixMilli(base+9)
	check("time", channels.LogFilter{From: from, To: to}, func(c channels.Archived) bool {
		return c.CreatedMS >= base+3 && c.CreatedMS <= base+9
	})
	items, _ := s.Logs(ctx, "p1", channels.LogFilter{}, nil, 1)
	if len(items) != 1 || items[0].EventName == nil || *items[0].EventName != "thing" || items[0].Status != channels.StatusCompleted ||
		items[0].CreatedAt == "" {
		t.Errorf("newest item: %+v", items)
	}
}

func ms(t *testing.T, id string) int64 {
	u := uuid.MustParse(id)
	sec, nsec := u.Time().UnixTime()
	return sec*1000 + nsec/1e6
}

func TestExpireDeletesOnlyOld(t *testing.T) {
	t.Parallel()
	now := time.Now()
	s := open(t, pgtest.URL(t), Options{Retention: time.Hour, Now: func() time.Time { return now }})
	ctx := context.Background()
	var cs []channels.Archived
	for i := range 12 {
		ms := now.Add(-2 * time.Hour).UnixMilli()
		if i%2 == 0 {
			ms = now.Add(-30 * time.Minute).UnixMilli()
		}
		cs = append(cs, channel("p1", "a", "", channels.StatusSuccess, ms+int64(i)))
	}
	if err := s.Put(ctx, cs); err != nil {
		t.Fatal(err)
	}
	n, err := s.Expire(ctx)
	if err != nil || n != 6 {
		t.Fatalf("Expire = %d, %v; want 6", n, err)
	}
	for i, c := range cs {
		got, _ := s.Get(ctx, c.ChannelID)
		if (got != nil) != (i%2 == 0) {
			t.Errorf("channel %d (%s old): kept %v", i, map[bool]string{true: "30m", false: "2h"}[i%2 == 0], got != nil)
		}
	}
}

// A database down at start: the store opens, and works once it is up.
func TestOpenWithTheDatabaseDown(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), "postgres://127.0.0.1:1/test?connect_timeout=1", Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put(context.Background(), []channels.Archived{channel("p", "a", "", channels.StatusSuccess, 1)}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Put to a database that is down: %v, want ErrUnavailable", err)
	}
	// Readers are told at once for a moment.
	start := time.Now()
	if _, err := s.Get(context.Background(), uuid.NewString()); !errors.Is(err, ErrUnavailable) || time.Since(start) > 500*time.Millisecond {
		t.Errorf("Get with the database down: %v after %v", err, time.Since(start))
	}
}

// Once the database answers again (the archive moving channels), readers
// are served at once, not a moment after the last failure.
func TestAnAnswerEndsTheOutage(t *testing.T) {
	t.Parallel()
	s := open(t, pgtest.URL(t), Options{})
	ctx := context.Background()
	c := channel("p1", "wf", "", channels.StatusSuccess, 1_700_000_000_000)
	// A statement a moment ago found the database unreachable.
	if err := s.answered("store", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a refused connection: %v, want ErrUnavailable", err)
	}
	if _, err := s.Get(ctx, c.ChannelID); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get right after: %v, want ErrUnavailable at once", err)
	}
	if err := s.Put(ctx, []channels.Archived{c}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, c.ChannelID); err != nil || got == nil {
		t.Errorf("Get once a Put went through = %v, %v; want the channel", got, err)
	}
}

// A conflict (a deadlock, a serialization failure) is an answer: retried,
// but the database is not taken for down.
func TestAConflictIsAnAnswer(t *testing.T) {
	t.Parallel()
	s := open(t, pgtest.URL(t), Options{})
	_ = s.answered("store", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
	if err := s.answered("store", &pgconn.PgError{Code: "40P01"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a deadlock: %v, want ErrUnavailable (retried)", err)
	}
	if _, err := s.Get(context.Background(), uuid.NewString()); err != nil {
		t.Errorf("Get after a deadlock = %v, want an answer", err)
	}
}
