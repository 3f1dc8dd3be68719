// Package pgtest gives tests a PostgreSQL schema of their own.
//
// The database is RIVERHUB_TEST_POSTGRES_URL, by default the local one
// (postgres://127.0.0.1:5432/test). Each test gets a new schema, named in
// the URL it is given (search_path), dropped when it ends, so tests and
// runs sharing the database never see each other's tables. Without a
// database a test is skipped, unless CI is set: then it fails.
package pgtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Base is the database the tests use.
func Base() string {
	if u := os.Getenv("RIVERHUB_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return "postgres://127.0.0.1:5432/test?sslmode=disable"
}

// URL creates a schema for tb and returns the URL of the database with that
// schema as its search_path.
func URL(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, Base())
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("PostgreSQL at %s: %v", Base(), err)
		}
		tb.Skipf("no PostgreSQL at %s (set RIVERHUB_TEST_POSTGRES_URL): %v", Base(), err)
	}
	defer conn.Close(ctx)
	schema := fmt.Sprintf("t_%d_%x", time.Now().Unix(), rand.Uint64())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, Base()); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			_ = c.Close(ctx)
		}
	})
	return WithSchema(tb, Base(), schema)
}

// WithSchema is u with schema as its search_path.
func WithSchema(tb testing.TB, u, schema string) string {
	tb.Helper()
	p, err := url.Parse(u)
	if err != nil {
		tb.Fatal(err)
	}
	q := p.Query()
	q.Set("search_path", schema)
	p.RawQuery = q.Encode()
	return p.String()
}

// Exec runs sql on the database of u (a URL URL returned).
func Exec(tb testing.TB, u, sql string, args ...any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		tb.Fatal(err)
	}
}

// Count is the number the query (SELECT count(*) …) answers on the
// database of u; -1 when it cannot be asked.
func Count(u, sql string, args ...any) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		return -1
	}
	defer c.Close(ctx)
	var n int64
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		return -1
	}
	return n
}
