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
	"crypto/rand"
	"errors"
	"fmt"
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
}

// NewIssuer returns an Issuer; ttl is each token's lifetime.
func NewIssuer(secret string, ttl time.Duration) *Issuer {
	return &Issuer{secret: []byte(secret), ttl: ttl, Now: time.Now}
}

// Issue returns a token for the channel, with a fresh random id (128 bits).
func (i *Issuer) Issue(projectID, channelID string) (string, error) {
	now := i.Now()
	c := Claims{
		ProjectID: projectID, ChannelID: channelID, Topic: Topic(projectID, channelID),
		RegisteredClaims: jwt.RegisteredClaims{
			ID:        rand.Text(),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(i.ttl)),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(i.secret)
	if err != nil {
		return "", fmt.Errorf("sign ws token: %w", err)
	}
	return s, nil
}

// ErrExpired is a well-formed token past its exp.
var ErrExpired = errors.New("token expired")

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
