package openapi_test

import (
	"encoding/json"
	"testing"

	"github.com/tetherhq/tether/api/openapi"
)

func TestJSONIsASwagger2DocumentWithTheDeviceServicePaths(t *testing.T) {
	var doc struct {
		Swagger string                     `json:"swagger"`
		Paths   map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapi.JSON(), &doc); err != nil {
		t.Fatalf("embedded document is not JSON: %v", err)
	}
	if doc.Swagger != "2.0" {
		t.Errorf("swagger = %q, want 2.0", doc.Swagger)
	}
	for _, p := range []string{
		"/v1/devices",
		"/v1/devices/{deviceId}",
		"/v1/devices:watch",
		"/v1/devices/{deviceId}:command",
		"/v1/devices/{deviceId}:disconnect",
	} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("document has no path %s", p)
		}
	}
}

func TestJSONReturnsACopyCallersMayModify(t *testing.T) {
	a := openapi.JSON()
	a[0] = 'X'
	if b := openapi.JSON(); b[0] == 'X' {
		t.Fatal("modifying one result changed the next")
	}
}

func TestTheDocumentDeclaresTheBearerScheme(t *testing.T) {
	var doc struct {
		SecurityDefinitions map[string]struct {
			Type, Name, In string
		} `json:"securityDefinitions"`
		Security []map[string][]string `json:"security"`
	}
	if err := json.Unmarshal(openapi.JSON(), &doc); err != nil {
		t.Fatal(err)
	}
	b := doc.SecurityDefinitions["Bearer"]
	if b.Type != "apiKey" || b.Name != "Authorization" || b.In != "header" {
		t.Errorf("securityDefinitions.Bearer = %+v", b)
	}
	if len(doc.Security) != 1 || doc.Security[0]["Bearer"] == nil {
		t.Errorf("security = %v, want [{Bearer: []}]", doc.Security)
	}
}
