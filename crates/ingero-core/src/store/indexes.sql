-- The indexes of `events`: the original's, and a unique one on `id` where it had its
-- PRIMARY KEY. They are built when a trace ends (or rolls the file over), not kept up
-- row by row while it writes: one sort per index instead of five B-tree inserts per
-- event, which is most of the writer's cost (see benches/writer_throughput.py).
-- A database that already has them (the original's, or one traced into before) keeps
-- them, and appending to it keeps them current.
CREATE UNIQUE INDEX IF NOT EXISTS idx_events_id ON events(id);
CREATE INDEX IF NOT EXISTS idx_events_timestamp ON events(timestamp);
CREATE INDEX IF NOT EXISTS idx_events_pid ON events(pid);
CREATE INDEX IF NOT EXISTS idx_events_source_op_stack ON events(source, op, stack_hash);
CREATE INDEX IF NOT EXISTS idx_events_cgroup ON events(cgroup_id) WHERE cgroup_id != 0;
