"""OpsLevel mode: the GraphQL API client, the job source and sink, and replica scaling."""
