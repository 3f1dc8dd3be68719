// Package wstoken issues and checks the ws_token a browser presents to the
// realtime hub: an HS256 JWT naming one project, one channel and its topic.
// Nodes of one deployment share the secret, so a token issued by one node
// opens the socket on any other.
//
// Every token carries a random id (the jti claim, Claims.ID), so a hub
// configured for single-use tokens can remember which ones have opened a
// socket; the package itself keeps no state.
package wstoken

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are the token's fields.
type Claims struct {
	ProjectID string `json:"project_id"`
	ChannelID string `json:"channel_id"`
	Topic     string `json:"topic"`
	jwt.RegisteredClaims
}

// Topic is the socket topic of a channel.
func Topic(projectID, channelID string) string {
	return "ai_response:" + projectID + ":" + channelID
}

// Issuer signs and verifies tokens.
type Issuer struct {
	// Now is the clock of iat, exp and expiry checks: a token issued on one
	// node is checked on another, so the server sets the deployment's
	// (Redis) clock. Default time.Now; set it before use.
	Now    func() time.Time
	secret []byte
	ttl    time.Duration
	macs   sync.Pool // of HMAC-SHA256 with secret
}

// NewIssuer returns an Issuer; ttl is each token's lifetime.
func NewIssuer(secret string, ttl time.Duration) *Issuer {
	return &Issuer{secret: []byte(secret), ttl: ttl, Now: time.Now}
}

// Issue returns a token for the channel, with a fresh random id (128 bits).
// It writes the bytes golang-jwt would write for the same claims
// (TestIssueAsJWTLibrary) without its reflection: one per submission.
func (i *Issuer) Issue(projectID, channelID string) (string, error) {
	now := i.Now()
	exp := now.Add(i.ttl)
	payload := make([]byte, 0, 160+2*(len(projectID)+len(channelID)))
	payload = append(payload, `{"project_id":`...)
	payload = appendString(payload, projectID)
	payload = append(payload, `,"channel_id":`...)
	payload = appendString(payload, channelID)
	payload = append(payload, `,"topic":`...)
	payload = appendString(payload, Topic(projectID, channelID))
	payload = append(payload, `,"exp":`...)
	payload = strconv.AppendInt(payload, exp.Unix(), 10)
	payload = append(payload, `,"iat":`...)
	payload = strconv.AppendInt(payload, now.Unix(), 10)
	payload = append(payload, `,"jti":"`...)
	payload = append(payload, rand.Text()...) // base32: nothing to escape
	payload = append(payload, `"}`...)

	enc := base64.RawURLEncoding
	tok := make([]byte, 0, len(header)+1+enc.EncodedLen(len(payload))+1+enc.EncodedLen(sha256.Size))
	tok = append(tok, header...)
	tok = append(tok, '.')
	tok = enc.AppendEncode(tok, payload)
	mac, _ := i.macs.Get().(hash.Hash)
	if mac == nil {
		mac = hmac.New(sha256.New, i.secret)
	}
	mac.Write(tok)
	var sum [sha256.Size]byte
	tok = append(tok, '.')
	tok = enc.AppendEncode(tok, mac.Sum(sum[:0]))
	mac.Reset()
	i.macs.Put(mac)
	return string(tok), nil
}

// header is the encoded JOSE header of every token, as golang-jwt writes it.
var header = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// appendString appends s as a JSON string. Ids need no escaping; anything
// else goes through encoding/json, as golang-jwt's would.
func appendString(b []byte, s string) []byte {
	for j := 0; j < len(s); j++ {
		if c := s[j]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// ErrExpired is a well-formed token past its exp.
var ErrExpired = errors.New("token expired")

// Expired reports whether claims Parse accepted have expired since, as
// Parse would judge them now: expired unless now is before exp.
func (i *Issuer) Expired(c Claims) bool {
	return c.ExpiresAt == nil || !i.Now().Before(c.ExpiresAt.Time)
}

// Parse verifies a token's signature, algorithm and expiry.
func (i *Issuer) Parse(token string) (Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return i.secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithTimeFunc(i.Now))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Claims{}, ErrExpired
	case err != nil:
		return Claims{}, fmt.Errorf("invalid token: %w", err)
	case c.ProjectID == "" || c.ChannelID == "":
		return Claims{}, errors.New("invalid token: missing project_id or channel_id")
	}
	return c, nil
}
