"""A private MariaDB server for tests (Debian's mariadb-server, started and stopped by a
fixture), and the pieces the store's multi-controller tests share."""
