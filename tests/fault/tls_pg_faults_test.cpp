// TLS fault tests of PostgreSQL and PgBouncer (F61-F63): helper P fills this file.
