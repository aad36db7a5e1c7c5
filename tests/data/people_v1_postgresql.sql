-- The people database as wxpush created it before schema versions (version 1: no
-- schema_version table), captured from that code's metadata, once, with:
--   for table in metadata.sorted_tables:
--       print(CreateTable(table).compile(dialect=DIALECT.dialect()), ";")
--       for index in sorted(table.indexes, key=lambda i: i.name):
--           print(CreateIndex(index).compile(dialect=DIALECT.dialect()), ";")
-- (DIALECT: sqlalchemy.dialects.postgresql). Never regenerate it from newer code: it stands for
-- databases already out there. tests/test_migrate.py builds a v1 database from it.

CREATE TABLE users (
	id VARCHAR(32) NOT NULL,
	phone VARCHAR(20),
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (phone)
);

CREATE TABLE identities (
	id SERIAL NOT NULL,
	provider VARCHAR(32) NOT NULL,
	appid VARCHAR(64) NOT NULL,
	openid VARCHAR(128) NOT NULL,
	unionid VARCHAR(128),
	user_id VARCHAR(32) NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_identities_provider_appid_openid UNIQUE (provider, appid, openid),
	FOREIGN KEY(user_id) REFERENCES users (id)
);

CREATE INDEX ix_identities_user_id ON identities (user_id);
