package tablestore

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Writing goes through aztables.EDMEntity, which annotates EDMDateTime
// values as Edm.DateTime. Reading does not: EDMEntity turns a JSON null
// (what the service returns for a $select-ed column an entity lacks) into
// int32(0). rawEntity reads each column with the type the schema gives it.
type rawEntity map[string]json.RawMessage

func parseEntity(b []byte) (rawEntity, error) {
	var e rawEntity
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("entity is not a JSON object: %w", err)
	}
	return e, nil
}

// str returns a string column; missing or null is "".
func (e rawEntity) str(name string) (string, error) {
	raw, ok := e[name]
	if !ok || string(raw) == "null" {
		return "", nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("column %s is not a string", name)
	}
	return v, nil
}

// time returns an Edm.DateTime column in UTC; missing or null is the zero
// time (zero times are never written: Table Storage's DateTime starts in
// 1601).
func (e rawEntity) time(name string) (time.Time, error) {
	s, err := e.str(name)
	if err != nil || s == "" {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("column %s is not a date-time: %w", name, err)
	}
	return t.UTC(), nil
}

// bool returns an Edm.Boolean column; missing or null is false.
func (e rawEntity) bool(name string) (bool, error) {
	raw, ok := e[name]
	if !ok || string(raw) == "null" {
		return false, nil
	}
	var v bool
	if err := json.Unmarshal(raw, &v); err != nil {
		return false, fmt.Errorf("column %s is not a boolean", name)
	}
	return v, nil
}

// columns reads an entity's columns in order: the first error wins and
// stays in err, and later reads do nothing, so a decoder lists its columns
// and checks err once.
type columns struct {
	e   rawEntity
	err error
}

func (c *columns) str(name string, dst *string) {
	if c.err == nil {
		*dst, c.err = c.e.str(name)
	}
}

func (c *columns) time(name string, dst *time.Time) {
	if c.err == nil {
		*dst, c.err = c.e.time(name)
	}
}

func (c *columns) bool(name string, dst *bool) {
	if c.err == nil {
		*dst, c.err = c.e.bool(name)
	}
}

// account reads the columns a connection and a pending connect share:
// the account Microsoft identified and the granted scopes (nil for none).
func (c *columns) account(a *connection.Account, scopes *[]string) {
	var joined string
	c.str(colAccountID, &a.ID)
	c.str(colTenantID, &a.TenantID)
	c.str(colEmail, &a.Email)
	c.str(colDisplayName, &a.DisplayName)
	c.str(colScopes, &joined)
	if *scopes = strings.Fields(joined); len(*scopes) == 0 {
		*scopes = nil
	}
}

// setAccount writes what columns.account reads.
func setAccount(props map[string]any, a connection.Account, scopes []string) {
	props[colAccountID] = a.ID
	props[colTenantID] = a.TenantID
	props[colEmail] = a.Email
	props[colDisplayName] = a.DisplayName
	props[colScopes] = strings.Join(scopes, " ")
}

// setTime writes t as Edm.DateTime, or nothing for the zero time.
// aztables formats EDMDateTime with a literal "Z", so t must be UTC; the
// service keeps 100 ns.
func setTime(props map[string]any, name string, t time.Time) {
	if !t.IsZero() {
		props[name] = aztables.EDMDateTime(t.UTC())
	}
}

// marshalEntity encodes an entity for AddEntity/UpdateEntity.
func marshalEntity(pk, rk string, props map[string]any) ([]byte, error) {
	b, err := json.Marshal(aztables.EDMEntity{
		Entity:     aztables.Entity{PartitionKey: pk, RowKey: rk},
		Properties: props,
	})
	if err != nil {
		return nil, fmt.Errorf("encode entity: %w", err)
	}
	return b, nil
}

// odataDateTime formats t for an OData filter literal (datetime'...').
func odataDateTime(t time.Time) string {
	return "datetime'" + t.UTC().Format("2006-01-02T15:04:05.0000000Z") + "'"
}
