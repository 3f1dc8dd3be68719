package wstoken

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testSecret = "test-secret-0123456789abcdef"
	pid        = "0b6f7b2e-1111-4c1e-9a55-000000000001"
	cid        = "7d3c9a10-2222-4f00-8c3a-000000000002"
)

var epoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// issuerAt returns an issuer whose clock reads *now.
func issuerAt(secret string, ttl time.Duration, now *time.Time) *Issuer {
	i := NewIssuer(secret, ttl)
	i.Now = func() time.Time { return *now }
	return i
}

func mustIssue(tb testing.TB, i *Issuer) string {
	tb.Helper()
	tok, err := i.Issue(pid, cid)
	if err != nil {
		tb.Fatalf("Issue: %v", err)
	}
	return tok
}

// sign signs claims with method and key, bypassing Issuer.
func sign(tb testing.TB, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		tb.Fatalf("sign with %s: %v", method.Alg(), err)
	}
	return s
}

func validClaims() Claims {
	return Claims{ProjectID: pid, ChannelID: cid, Topic: Topic(pid, cid),
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(epoch.Add(time.Hour))}}
}

func TestTopic(t *testing.T) {
	t.Parallel()
	if got, want := Topic(pid, cid), "ai_response:"+pid+":"+cid; got != want {
		t.Errorf("Topic = %q, want %q", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	now := epoch
	i := issuerAt(testSecret, 15*time.Minute, &now)
	tok := mustIssue(t, i)
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("token %q is not a compact JWS", tok)
	}

	// The header names HS256: browsers and other nodes rely on it.
	var hdr struct{ Alg, Typ string }
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil || json.Unmarshal(raw, &hdr) != nil || hdr.Alg != "HS256" {
		t.Errorf("token header = %s (%v), want alg HS256", raw, err)
	}
	// The payload carries the contract's claim names.
	var payload map[string]any
	raw, err = base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil || json.Unmarshal(raw, &payload) != nil {
		t.Fatalf("token payload %s: %v", raw, err)
	}
	for k, want := range map[string]any{"project_id": pid, "channel_id": cid, "topic": Topic(pid, cid),
		"exp": float64(epoch.Add(15 * time.Minute).Unix())} {
		if payload[k] != want {
			t.Errorf("payload[%q] = %v, want %v", k, payload[k], want)
		}
	}

	now = epoch.Add(14 * time.Minute)
	c, err := i.Parse(tok)
	if err != nil {
		t.Fatalf("Parse within ttl: %v", err)
	}
	if c.ProjectID != pid || c.ChannelID != cid || c.Topic != Topic(pid, cid) {
		t.Errorf("Parse = %+v", c)
	}

	// Another node with the same secret accepts it.
	other := issuerAt(testSecret, time.Minute, &now)
	if _, err := other.Parse(tok); err != nil {
		t.Errorf("a second issuer with the shared secret refused the token: %v", err)
	}
}

// Each token has its own jti, even two issued for one channel in the same
// second: a hub with single-use tokens tells them apart by it.
func TestUniqueID(t *testing.T) {
	t.Parallel()
	now := epoch
	i := issuerAt(testSecret, time.Hour, &now)
	seen := map[string]bool{}
	for range 3 {
		tok := mustIssue(t, i)
		c, err := i.Parse(tok)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if len(c.ID) < 20 {
			t.Fatalf("jti %q: want a random id of at least 128 bits", c.ID)
		}
		if seen[c.ID] {
			t.Fatalf("jti %q issued twice", c.ID)
		}
		seen[c.ID] = true
		raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		var payload map[string]any
		if err := json.Unmarshal(raw, &payload); err != nil || payload["jti"] != c.ID {
			t.Fatalf("payload %s: want the id as the jti claim", raw)
		}
	}
}

func TestExpired(t *testing.T) {
	t.Parallel()
	now := epoch
	i := issuerAt(testSecret, 15*time.Minute, &now)
	tok := mustIssue(t, i)
	now = epoch.Add(15*time.Minute + time.Second)
	_, err := i.Parse(tok)
	if !errors.Is(err, ErrExpired) {
		t.Errorf("Parse after exp = %v, want ErrExpired", err)
	}
}

// Expired judges claims Parse accepted as Parse would judge their token at
// the same moment, on either side of exp.
func TestExpiredAgreesWithParse(t *testing.T) {
	t.Parallel()
	now := epoch
	i := issuerAt(testSecret, 15*time.Minute, &now)
	tok := mustIssue(t, i)
	c, err := i.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{0, 15*time.Minute - time.Nanosecond, 15 * time.Minute, 15*time.Minute + time.Nanosecond, time.Hour} {
		now = epoch.Add(d)
		_, err := i.Parse(tok)
		if parsed := errors.Is(err, ErrExpired); parsed != i.Expired(c) || err != nil && !parsed {
			t.Errorf("at exp%+v: Parse says %v, Expired %v", d-15*time.Minute, err, i.Expired(c))
		}
	}
	if !i.Expired(Claims{}) {
		t.Error("claims without exp are not expired")
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	now := epoch
	i := issuerAt(testSecret, time.Hour, &now)
	good := mustIssue(t, i)
	parts := strings.Split(good, ".")

	tamper := func(mod func(map[string]any)) string {
		raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		mod(m)
		b, _ := json.Marshal(m)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
	}
	noExp := validClaims()
	noExp.ExpiresAt = nil
	noProject := validClaims()
	noProject.ProjectID = ""
	noChannel := validClaims()
	noChannel.ChannelID = ""
	future := validClaims()
	future.NotBefore = jwt.NewNumericDate(epoch.Add(time.Hour))

	tests := []struct {
		name  string
		token string
	}{
		{"wrong secret", mustIssue(t, issuerAt("another-secret-0123456789", time.Hour, &now))},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, validClaims())},
		{"HS512 with the right secret", sign(t, jwt.SigningMethodHS512, []byte(testSecret), validClaims())},
		{"HS384 with the right secret", sign(t, jwt.SigningMethodHS384, []byte(testSecret), validClaims())},
		{"tampered project_id", tamper(func(m map[string]any) { m["project_id"] = "other-project" })},
		{"tampered channel_id", tamper(func(m map[string]any) { m["channel_id"] = "other-channel" })},
		{"tampered exp", tamper(func(m map[string]any) { m["exp"] = float64(epoch.Add(100 * time.Hour).Unix()) })},
		{"signature stripped", parts[0] + "." + parts[1] + "."},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(sign(t, jwt.SigningMethodHS256, []byte(testSecret), noProject), ".")[2]},
		{"no exp", sign(t, jwt.SigningMethodHS256, []byte(testSecret), noExp)},
		{"no project_id", sign(t, jwt.SigningMethodHS256, []byte(testSecret), noProject)},
		{"no channel_id", sign(t, jwt.SigningMethodHS256, []byte(testSecret), noChannel)},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, []byte(testSecret), future)},
		{"empty", ""},
		{"garbage", "not.a.token"},
		{"two parts", parts[0] + "." + parts[1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := i.Parse(tt.token)
			if err == nil {
				t.Fatalf("Parse accepted the token: %+v", c)
			}
			if errors.Is(err, ErrExpired) {
				t.Errorf("Parse = ErrExpired for a token that is not merely expired: %v", err)
			}
			if c.ProjectID != "" || c.ChannelID != "" {
				t.Errorf("Parse returned claims %+v with its error", c)
			}
		})
	}
	// The untouched token still works, so the cases above fail for their
	// own reason.
	if _, err := i.Parse(good); err != nil {
		t.Fatalf("Parse(good) = %v", err)
	}
	if _, err := i.Parse(sign(t, jwt.SigningMethodHS256, []byte(testSecret), validClaims())); err != nil {
		t.Fatalf("Parse(HS256 of the claims the other cases start from) = %v", err)
	}
}

// TestIssueAsJWTLibrary: Issue writes, byte for byte, the token golang-jwt
// signs for the same claims (its jti read back from the token), ids that
// need escaping included.
func TestIssueAsJWTLibrary(t *testing.T) {
	t.Parallel()
	now := epoch.Add(1234567 * time.Millisecond)
	i := issuerAt(testSecret, 15*time.Minute, &now)
	for _, ids := range [][2]string{{pid, cid}, {`p"q\r<&>`, "é\u2028\x01"}} {
		tok, err := i.Issue(ids[0], ids[1])
		if err != nil {
			t.Fatal(err)
		}
		var got Claims
		raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		if err != nil || json.Unmarshal(raw, &got) != nil || len(got.ID) != 26 {
			t.Fatalf("payload %s: %v, jti %q", raw, err, got.ID)
		}
		want := sign(t, jwt.SigningMethodHS256, []byte(testSecret), Claims{
			ProjectID: ids[0], ChannelID: ids[1], Topic: Topic(ids[0], ids[1]),
			RegisteredClaims: jwt.RegisteredClaims{ID: got.ID, IssuedAt: jwt.NewNumericDate(now),
				ExpiresAt: jwt.NewNumericDate(now.Add(15 * time.Minute))},
		})
		if tok != want {
			t.Errorf("ids %q:\n got %s\nwant %s", ids, tok, want)
		}
		if c, err := i.Parse(tok); err != nil || c.ProjectID != ids[0] || c.ChannelID != ids[1] {
			t.Errorf("ids %q: Parse = %+v, %v", ids, c, err)
		}
	}
}

func BenchmarkIssue(b *testing.B) {
	i := NewIssuer(testSecret, 15*time.Minute)
	b.ReportAllocs()
	for range b.N {
		if _, err := i.Issue(pid, cid); err != nil {
			b.Fatal(err)
		}
	}
}
