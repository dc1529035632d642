package connection

import (
	"reflect"
	"testing"
)

func TestNormalizeScopes(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		refresh bool
		want    []string
	}{
		{[]string{"https://graph.microsoft.com/User.Read", "https://graph.microsoft.com/Files.ReadWrite.All", "openid", "profile", "email"}, true,
			[]string{"User.Read", "Files.ReadWrite.All", "offline_access"}},
		{[]string{"User.Read", "Files.ReadWrite.All", "openid", "profile", "email"}, true, []string{"User.Read", "Files.ReadWrite.All", "offline_access"}},
		{[]string{"https://graph.microsoft.us/User.Read", "User.Read", "offline_access"}, true, []string{"User.Read", "offline_access"}},
		{[]string{"User.Read"}, false, []string{"User.Read"}},
		{nil, false, []string{}},
	} {
		if got := NormalizeScopes(tc.in, tc.refresh); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("NormalizeScopes(%v, %v) = %v, want %v", tc.in, tc.refresh, got, tc.want)
		}
	}
	if got := AccessScopes([]string{"User.Read", "offline_access", "Files.ReadWrite.All"}); !reflect.DeepEqual(got, []string{"User.Read", "Files.ReadWrite.All"}) {
		t.Errorf("AccessScopes = %v", got)
	}
}
