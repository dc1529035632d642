package connection

import "regexp"

// guidPattern is a GUID in its 8-4-4-4-12 hex form, the form Microsoft
// gives tenant IDs (tid) and application (client) IDs.
var guidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// IsGUID reports whether s is a GUID such as a tenant ID or a client ID
// (as opposed to common, organizations, consumers or a domain name).
func IsGUID(s string) bool { return guidPattern.MatchString(s) }
