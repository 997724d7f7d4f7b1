"""Access: who is calling (identities, tokens) and what they may do (policy)."""
