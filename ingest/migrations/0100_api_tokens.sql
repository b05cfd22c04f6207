-- API tokens (issue 6). A token is 32 random bytes (256 bits) the API hands out once; only its
-- SHA-256 is stored. No slow password hash is needed: those protect guessable secrets from
-- offline guessing, and a 256-bit random token cannot be guessed whatever the hash rate, so a
-- fast hash loses nothing and lets each request find its token by an index lookup.
CREATE TABLE api_tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL CHECK (name <> ''),
    token_sha256 bytea NOT NULL UNIQUE CHECK (octet_length(token_sha256) = 32),
    scopes text[] NOT NULL CHECK (
        cardinality(scopes) > 0
        AND scopes <@ ARRAY['billing:read', 'readings:read', 'readings:write', 'meters:admin']
    ),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
