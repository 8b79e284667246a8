"""The seed's ``jobs`` DDL, verbatim, for migration and drop-in tests."""

SEED_JOBS_DDL = """
CREATE TABLE jobs (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id UUID NOT NULL,
  project_id UUID,
  type TEXT NOT NULL,           -- 'roto', 'color-grade', 'audio-clean'
  status TEXT DEFAULT 'pending', -- 'pending', 'running', 'done', 'failed'
  input_data JSONB NOT NULL,     -- { file_url, settings }
  output_data JSONB,             -- { output_url, storage_path }
  error_message TEXT,
  created_at TIMESTAMP DEFAULT now(),
  completed_at TIMESTAMP
);
"""

# SQLite cannot call gen_random_uuid()/now() in a DEFAULT; otherwise the same table.
SEED_JOBS_DDL_SQLITE = (
    SEED_JOBS_DDL.replace(" DEFAULT gen_random_uuid()", "").replace("DEFAULT now()", "DEFAULT CURRENT_TIMESTAMP")
)
