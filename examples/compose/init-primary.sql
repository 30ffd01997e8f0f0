-- The replication user of the logferry agent (binlog streaming only).
CREATE USER IF NOT EXISTS 'logferry'@'%' IDENTIFIED BY 'logferry-pw';
GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'logferry'@'%';
