// Package jscanon produces the exact bytes that Node.js would produce for
// JSON.stringify(JSON.parse(text)).
//
// # Why
//
// riverhub signs every webhook it sends. Many receivers verify the
// signature with a widely copied snippet that does not hash the bytes on the
// wire: it hashes HMAC(secret, JSON.stringify(req.body)), where req.body is
// the value express.json() built with JSON.parse. That check only passes if
// the body riverhub sends is already a fixed point of
// JSON.stringify(JSON.parse(·)). encoding/json output is usually not: it
// escapes <, >, & and U+2028/U+2029, json.RawMessage keeps whatever escapes
// and number spellings it came with (1.0, 1e5, -0, 1E+2, integers beyond
// 2^53), duplicate keys survive, and object keys keep their order while
// JavaScript moves integer-like keys to the front. Any of these makes the
// receiver's re-serialisation differ by a byte and the signature fail.
// Signing and sending Canonical's output instead makes both sides hash the
// same bytes.
//
// # Guarantees
//
// For any input that JSON.parse accepts (after the UTF-8 decoding described
// below), Canonical returns byte for byte what JSON.stringify returns for the
// parsed value, encoded as UTF-8, and it returns an error exactly when
// JSON.parse would throw, apart from the depth limit below. In particular:
//
//   - Strings escape only '"', '\\' and control characters (\b \f \n \r \t
//     in short form, other characters below U+0020 as \u00xx with lowercase
//     hex) and lone surrogates (\udxxx, lowercase, as the well-formed
//     JSON.stringify of ES2019 does). Everything else, including '/', '<',
//     '>', '&', U+007F and U+2028/U+2029, is written as raw UTF-8, and
//     escapes such as \u0041 or \/ in the input are decoded.
//   - Numbers are read as IEEE-754 doubles with round-to-nearest and written
//     with ECMAScript Number::toString: shortest round-trip digits, plain
//     notation when 1e-6 <= |x| < 1e21, exponential notation such as 1e+21
//     or 1.5e-7 otherwise, -0 as 0. Numbers too large for a double parse to Infinity in
//     JavaScript, and JSON.stringify writes Infinity as null; so does
//     Canonical.
//   - Objects keep the last value of a duplicated key at the position of the
//     key's first occurrence. Keys that are array indices (canonical decimal
//     integers 0 through 2^32-2) come first in ascending numeric order, then
//     the other keys in insertion order, which is the property order
//     JSON.stringify follows. Key identity is decided on the decoded string,
//     so "a" and "\u0061" are the same key, and "\u0030" is the index key 0.
//   - "__proto__" is an ordinary key, as JSON.parse creates it as an own
//     data property.
//   - No whitespace is written.
//
// The output is always valid UTF-8 and valid JSON, and Canonical of it
// returns it unchanged.
//
// # Invalid UTF-8
//
// JSON.parse works on a JavaScript string, not on bytes: Node turns the
// request body into a string with its UTF-8 decoder, which follows the
// WHATWG Encoding Standard and replaces each maximal invalid subsequence
// with one U+FFFD. Canonical decodes the same way, so a string containing
// the bytes F0 9F 98 followed by '"' yields a single U+FFFD, while ED A0 80
// (an encoded surrogate) yields three. Outside strings any non-ASCII byte is
// a syntax error for both. A leading byte order mark is rejected, as
// JSON.parse rejects U+FEFF.
//
// Marshal differs only in where its strings come from: encoding/json
// already replaces invalid UTF-8 in Go strings with U+FFFD (one per invalid
// byte) before Canonical sees it. Whatever the substitution, the output is a
// fixed point of JSON.stringify(JSON.parse(·)), which is what the signature
// check needs.
//
// # Depth
//
// JSON.stringify is recursive in V8 and throws RangeError somewhere past
// about four thousand levels of nesting, fewer when the caller's stack is
// already deep. Canonical rejects input nested deeper than 1000 levels, so
// that it never returns a body a receiver could not re-serialise.
package jscanon
