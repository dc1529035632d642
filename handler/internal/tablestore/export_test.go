package tablestore

// SetPageSize lowers DeleteExpired's service page size so tests can cover
// paging with a few entities.
func SetPageSize(s *Store, n int32) { s.pageSize = n }
