package tablestore

// partitionKey is a connection's PartitionKey: the user_id as it is.
//
// Contract v2 (connection.ValidUserID) allows only A-Z a-z 0-9 - . _ ~ @,
// at most 256 of them: none of what Table keys forbid ('/', '\', '#', '?',
// control characters), nothing that key URLs or OData literals must quote
// ('%', '\”), and well under the 512-character key limit. v1 allowed any
// UTF-8 and needed a reversible escaping (~XX) plus a base64 form for long
// keys; both are gone with the characters that needed them, so an admin
// browsing the table reads the CMS's ids as they are.
func partitionKey(userID string) string { return userID }
