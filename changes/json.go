package changes

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
)

// The tokenizer: changeParser reads a change-list document one JSON token
// or one small value at a time through encoding/json's Decoder, and a
// budgetReader stops any single value from growing past maxEntryBytes.
// Errors name the place in the document, not Go's types.

// errEntryTooLarge is what budgetReader returns once one JSON value has
// used up its budget.
var errEntryTooLarge = errors.New("entry too large")

// budgetReader lets the JSON decoder read at most n more bytes, so one
// oversized value cannot make it buffer the whole file. The parser resets
// n before each value. It keeps the first read error of r.
type budgetReader struct {
	r   io.Reader
	n   int64
	err error
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errEntryTooLarge
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// jsonError explains an error of the decoder at where.
func (p *changeParser) jsonError(where string, err error) error {
	switch {
	case errors.Is(err, errEntryTooLarge):
		return p.errorf("%s: a JSON value longer than %d bytes", where, maxEntryBytes)
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Type != nil { // say it without Go's types
		if te.Field != "" {
			where += ": " + te.Field
		}
		want := "an object"
		switch te.Type.Kind() {
		case reflect.Int64:
			want = "a 64-bit integer"
		case reflect.Pointer, reflect.String:
			want = "a string"
		}
		return p.errorf("%s is %s, want %s", where, te.Value, want)
	}
	return fmt.Errorf("%w: %s: %s: %w", ErrChangeList, p.format, where, err)
}

func (p *changeParser) token() (json.Token, error) {
	p.in.n = maxEntryBytes
	return p.dec.Token()
}

func (p *changeParser) decode(v any) error {
	p.in.n = maxEntryBytes
	return p.dec.Decode(v)
}

func (p *changeParser) more() bool {
	p.in.n = maxEntryBytes
	return p.dec.More()
}

// open reads the token that starts the value at where: want, or null
// (reported as false) when nullable.
func (p *changeParser) open(where string, want json.Delim, nullable bool) (bool, error) {
	tok, err := p.token()
	if err != nil {
		return false, p.jsonError(where, err)
	}
	if tok == nil && nullable {
		return false, nil
	}
	if tok != want {
		kind := "an object"
		if want == '[' {
			kind = "an array"
		}
		return false, p.errorf("%s is %v, not %s", where, tokenKind(tok), kind)
	}
	return true, nil
}

// close reads the delimiter that ends an array or object.
func (p *changeParser) close(where string) error {
	if _, err := p.token(); err != nil {
		return p.jsonError(where, err)
	}
	return nil
}

// key reads the next key of an object.
func (p *changeParser) key(where string) (string, error) {
	tok, err := p.token()
	if err != nil {
		return "", p.jsonError(where, err)
	}
	k, _ := tok.(string)
	return k, nil
}

// skip reads and drops one value.
func (p *changeParser) skip(where string) error {
	var raw json.RawMessage
	if err := p.decode(&raw); err != nil {
		return p.jsonError(where, err)
	}
	return nil
}

func tokenKind(tok json.Token) string {
	switch tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		return fmt.Sprintf("%q", tok)
	case string:
		return "a string"
	case bool:
		return "a boolean"
	}
	return "a number"
}
