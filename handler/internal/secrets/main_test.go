package secrets

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The managed-identity stand-in: what App Service / Functions provides to a
// process through IDENTITY_ENDPOINT and IDENTITY_HEADER. azidentity caches
// managed-identity tokens for the whole process, so there is exactly one
// stand-in per test binary, started here before any test builds a
// credential.
const (
	identityHeaderValue = "identity-header-from-the-host"
	identityToken       = "mi-access-token-for-key-vault"
	vaultResource       = "https://vault.azure.net"
)

var identity struct {
	mu        sync.Mutex
	requests  int
	resources []string
	problems  []string
}

func identityHandler(w http.ResponseWriter, r *http.Request) {
	identity.mu.Lock()
	defer identity.mu.Unlock()
	identity.requests++
	q := r.URL.Query()
	if got := r.Header.Get("X-IDENTITY-HEADER"); got != identityHeaderValue {
		identity.problems = append(identity.problems, fmt.Sprintf("X-IDENTITY-HEADER = %q", got))
		http.Error(w, `{"error":"bad header"}`, http.StatusBadRequest)
		return
	}
	if r.Method != http.MethodGet || q.Get("api-version") != "2019-08-01" {
		identity.problems = append(identity.problems, fmt.Sprintf("%s api-version=%q", r.Method, q.Get("api-version")))
	}
	identity.resources = append(identity.resources, q.Get("resource"))
	if q.Get("resource") != vaultResource {
		http.Error(w, `{"error":"unexpected resource"}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{
		"access_token": identityToken,
		"expires_on":   strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10),
		"resource":     q.Get("resource"),
		"token_type":   "Bearer",
	})
}

func TestMain(m *testing.M) {
	srv := httptest.NewServer(http.HandlerFunc(identityHandler))
	// Exactly the variables Azure sets for the app's process; others that
	// would select another identity source are cleared.
	for _, k := range []string{"IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"} {
		os.Unsetenv(k)
	}
	os.Setenv("IDENTITY_ENDPOINT", srv.URL+"/msi/token")
	os.Setenv("IDENTITY_HEADER", identityHeaderValue)
	code := m.Run()
	srv.Close()
	os.Exit(code)
}
