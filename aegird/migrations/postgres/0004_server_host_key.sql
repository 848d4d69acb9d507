-- The SSH host key(s) a server presented when it was added (known_hosts lines): aegird only
-- ever connects to a host that still presents them.
ALTER TABLE servers ADD COLUMN ssh_host_key TEXT;
