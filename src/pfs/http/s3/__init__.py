"""The S3 gateway's protocol layer: S3 requests parsed and S3 answers rendered, independent of storage."""
