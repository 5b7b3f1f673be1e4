"""PKCS#11 tokens, keys and certificates, the signer, and the TSA and OCSP clients."""
