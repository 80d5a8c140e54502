"""The admin token the tests configure, and the header that presents it."""

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

CATALOG_TOKEN = "test-catalog-token-0123456789"
CATALOG = {"Authorization": f"Bearer {CATALOG_TOKEN}"}
