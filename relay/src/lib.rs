//! RTMP origin/edge relay (placeholder until the relay issue lands).
