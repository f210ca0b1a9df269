"""Operations: what operators and their tools read (live state, admin routes)."""
