-- A sqlite3 workload for `mie bench`: build tables, index them, join and aggregate, then
-- check the database. Deterministic: no random(), so every allocator prints the same.
-- `mie bench` replaces {scale} with its scale before feeding this to sqlite3.
PRAGMA cache_size = -65536;
CREATE TABLE author(id INTEGER PRIMARY KEY, name TEXT, country TEXT);
CREATE TABLE book(id INTEGER PRIMARY KEY, author_id INTEGER, title TEXT, year INTEGER, body TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO author SELECT i, 'author ' || i || ' ' || substr('abcdefghijklmnopqrstuvwxyz', i % 26 + 1, 1 + i % 9),
    'country' || (i % 97) FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000 * {scale})
INSERT INTO book SELECT i, (i * 7919) % 20000 + 1, 'title ' || ((i * 104729) % 1000003),
    1900 + (i * 31) % 125, printf('%.*c', 20 + (i * 13) % 300, 'x') FROM n;
CREATE INDEX book_author ON book(author_id);
CREATE INDEX book_year_title ON book(year, title);
SELECT count(*), sum(length(body)) FROM book;
SELECT a.country, count(*), max(b.year), sum(length(b.title)) FROM book b JOIN author a ON a.id = b.author_id
    GROUP BY a.country ORDER BY 2 DESC, 1 LIMIT 5;
SELECT year, count(DISTINCT author_id) FROM book WHERE year BETWEEN 1950 AND 1960 GROUP BY year ORDER BY year;
UPDATE book SET body = body || body WHERE id % 5 = 0;
DELETE FROM book WHERE id % 7 = 0;
SELECT group_concat(title, ',') IS NOT NULL, count(*) FROM (SELECT title FROM book ORDER BY title LIMIT 50000);
PRAGMA integrity_check;
