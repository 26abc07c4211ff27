<?php
/**
 * The PHP client's domain normaliser over a corpus, for tests/test_normaliser_parity.py.
 *
 *   php normalise_domains.php CORPUS.json
 *
 * CORPUS.json is a JSON list of strings. Prints one JSON list of the same length: the
 * canonical text for each input, or null where LicenseServer_Client::normaliseDomain()
 * refuses it (returns ''). One process for the whole corpus keeps the test fast.
 */

require __DIR__ . '/../../clients/php/LicenseClient.php';

$corpus = json_decode((string) file_get_contents($argv[1] ?? ''), true);
if (!is_array($corpus)) {
    fwrite(STDERR, "usage: php normalise_domains.php CORPUS.json (a JSON list of strings)\n");
    exit(2);
}
$results = array();
foreach ($corpus as $raw) {
    $canonical = LicenseServer_Client::normaliseDomain((string) $raw);
    $results[] = $canonical === '' ? null : $canonical;
}
echo json_encode($results, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), "\n";
