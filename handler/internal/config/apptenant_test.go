package config

import "testing"

// MICROSOFT_APP_TENANT_ID is optional (the diagnostics' credential check
// then says it is not configured); a value that cannot name a tenant is a
// problem of the diagnostics area only, so no other route answers 503.
func TestAppTenantID(t *testing.T) {
	for _, tc := range []struct {
		value   string
		problem bool
	}{
		{"", false},
		{"4a6f2c1e-8b3d-4e7f-9a0c-5d1b2e3f4a6b", false},
		{"contoso.onmicrosoft.com", false},
		{"common", true},
		{"organizations", true},
		{"not a tenant", true},
	} {
		e := valid()
		e["MICROSOFT_APP_TENANT_ID"] = tc.value
		c := Load(env(e))
		if c.AppTenantID != tc.value {
			t.Errorf("%q: AppTenantID = %q", tc.value, c.AppTenantID)
		}
		got := c.Missing(AreaDiagnostics)
		if (len(got) > 0) != tc.problem || len(c.Problems) != len(got) {
			t.Errorf("%q: problems %v, diagnostics problems %v, want a diagnostics problem: %v", tc.value, c.Problems, got, tc.problem)
		}
	}
}
