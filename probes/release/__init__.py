"""The release gate (issue 21): the KL preflight (``kl``), no regression against a vetted baseline
(``baseline``) and a release artifact judged against its source (``artifact``). No pytest here."""
