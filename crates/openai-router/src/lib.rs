//! Routes a tenant's Azure OpenAI call to a deployment chosen by its isolation model: member
//! choice by priority and weight, cooldowns on 429, circuit breaking, retry and failover,
//! streaming. It knows upstreams, never tenants: `api` turns a tenant's placement into a
//! routing target.
//!
//! Not built yet: this crate is an empty placeholder in the workspace layout until the
//! routing issue lands.
