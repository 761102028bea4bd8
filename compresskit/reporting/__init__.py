"""What a finished run says: the report collected from a run folder (``report``), rendered as Markdown, HTML and a
terminal table (``render``), compared with a baseline run (``compare``, ``compare_render``), and plotted
(``plots``). Nothing here measures; the task family names its columns and sections."""
